//! `GET /metrics`: the controller's metrics in the Prometheus text format, written through
//! `toygres_common::exposition` (the `prometheus` crate): gauges read from the CMS at scrape time,
//! and the counters the controller keeps in memory ([`crate::metrics::ControllerMetrics`]).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use toygres_common::exposition::{self, Exposition};
use toygres_common::ro_api::{RoBackendState, RoEndpointView};

use super::ApiState;
use crate::endpoints::ro_rule::with_breakers;

pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let counts = match state.cms.count_instances_by_state().await {
        Ok(counts) => Some(counts),
        Err(e) => {
            tracing::warn!("metrics: {e}");
            None
        }
    };
    let health = state.cms.count_instances_by_health().await.ok();
    let ro = match state.cms.ro_views(None).await {
        Ok(views) => Some(
            views
                .into_iter()
                .map(|(name, view)| {
                    let breakers = state
                        .platform
                        .as_ref()
                        .map(|platform| platform.ro_breakers(&name))
                        .unwrap_or_default();
                    let settings = view.settings.clone();
                    with_breakers(view, &breakers, &settings)
                })
                .collect::<Vec<_>>(),
        ),
        Err(e) => {
            tracing::warn!("metrics: {e}");
            None
        }
    };
    let x = Exposition::default();
    render(&x, counts.as_deref());
    render_controller(&x, health.as_deref(), &state.metrics);
    if let Some(ro) = &ro {
        render_ro(&x, ro);
    }
    ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], x.text())
}

/// The gauges of instance health and the counters of operations and health checks.
fn render_controller(
    x: &Exposition,
    health: Option<&[(String, i64)]>,
    metrics: &crate::metrics::ControllerMetrics,
) {
    if let Some(health) = health {
        let family = x.gauges(
            "toygres_controller_instances_health",
            "Live instances, by health.",
            &["health"],
        );
        for (health, count) in health {
            family.set(&[health], *count as f64);
        }
    }
    let operations = metrics.operations();
    let finished = x.counters(
        "toygres_controller_operations_total",
        "Operations finished since start, by kind and result.",
        &["kind", "result"],
    );
    for (kind, result, count, _) in &operations {
        finished.set(&[kind, result], *count as f64);
    }
    let durations: Vec<(Vec<String>, u64, f64)> = operations
        .iter()
        .map(|(kind, result, count, seconds)| {
            (vec![kind.clone(), result.clone()], *count, *seconds)
        })
        .collect();
    x.summaries(
        "toygres_controller_operation_duration_seconds",
        "How long finished operations took.",
        &["kind", "result"],
        &durations,
    );
    let events = x.counters(
        "toygres_controller_ha_events_total",
        "High-availability decisions and alerts since start, by kind (ha-alert: a primary is down and no standby may take over).",
        &["kind"],
    );
    for (kind, count) in metrics.ha_events() {
        events.set(&[&kind], count as f64);
    }
    let (ok, failed) = metrics.health_checks();
    let checks = x.counters(
        "toygres_controller_health_checks_total",
        "Member health probes, by result.",
        &["result"],
    );
    checks.set(&["ok"], ok as f64);
    checks.set(&["failed"], failed as f64);
    let (sent, withheld, uncorroborated) = metrics.wakeups();
    let wakeups = x.counters(
        "toygres_controller_health_wakeups_total",
        "The health fast path's wake-ups of instance actors, by outcome (sent; withheld: one was queued or a round ran; uncorroborated: a probe timed out while the prober ran late, held for a second pass).",
        &["outcome"],
    );
    wakeups.set(&["sent"], sent as f64);
    wakeups.set(&["withheld"], withheld as f64);
    wakeups.set(&["uncorroborated"], uncorroborated as f64);
}

/// The live instances' ro endpoints: their standbys by state, and where the endpoints lead
/// (labels bounded: a fixed set of states, whatever the fleet's size).
fn render_ro(x: &Exposition, views: &[RoEndpointView]) {
    let backends = x.gauges(
        "toygres_controller_ro_backends",
        "Standbys of the live instances' ro endpoints, by state (in, lag-over-bound, breaker-open, half-open, unhealthy).",
        &["state"],
    );
    for state in RoBackendState::ALL {
        let count = views
            .iter()
            .flat_map(|v| &v.backends)
            .filter(|b| b.state == state)
            .count();
        backends.set(&[state.as_str()], count as f64);
    }
    let endpoints = x.gauges(
        "toygres_controller_ro_endpoints",
        "Live instances' ro endpoints, by where they lead: standbys, primary (no standby qualifies: fallback) or nowhere (refusing).",
        &["leads_to"],
    );
    let count = |pick: fn(&RoEndpointView) -> bool| views.iter().filter(|v| pick(v)).count() as f64;
    endpoints.set(&["primary"], count(|v| v.fallback_to_primary));
    endpoints.set(&["nowhere"], count(|v| v.refusing));
    endpoints.set(
        &["standbys"],
        count(|v| !v.fallback_to_primary && !v.refusing),
    );
}

/// The controller's own gauges; `instance_counts` is `None` when the CMS could not be read.
fn render(x: &Exposition, instance_counts: Option<&[(&str, i64)]>) {
    x.gauge(
        "toygres_controller_up",
        "Whether the controller is running.",
        1.0,
    );
    x.gauge(
        "toygres_controller_cms_up",
        "Whether the CMS database answered the last scrape.",
        if instance_counts.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(counts) = instance_counts {
        let family = x.gauges(
            "toygres_controller_instances",
            "Instances recorded in the CMS, by state.",
            &["state"],
        );
        for (state, count) in counts {
            family.set(&[state], *count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_gauges_carry_help_type_and_one_line_per_state() {
        let x = Exposition::default();
        render(&x, Some(&[("creating", 0), ("running", 2)]));
        let text = x.text();
        assert!(text.contains("# TYPE toygres_controller_instances gauge\n"));
        assert!(text.contains("# HELP toygres_controller_instances "));
        assert!(text.contains("toygres_controller_instances{state=\"running\"} 2\n"));
        assert!(text.contains("toygres_controller_instances{state=\"creating\"} 0\n"));
        assert!(text.contains("toygres_controller_cms_up 1\n"));
    }

    #[test]
    fn operation_and_health_check_counters_are_rendered() {
        let metrics = crate::metrics::ControllerMetrics::default();
        metrics.record_operation("create", "succeeded", 2500);
        metrics.record_health_check(true);
        metrics.record_health_check(false);
        let x = Exposition::default();
        render_controller(&x, Some(&[("healthy".to_string(), 1)]), &metrics);
        let text = x.text();
        assert!(text.contains("toygres_controller_instances_health{health=\"healthy\"} 1\n"));
        assert!(text.contains(
            "toygres_controller_operations_total{kind=\"create\",result=\"succeeded\"} 1\n"
        ));
        assert!(text.contains(
            "toygres_controller_operation_duration_seconds_sum{kind=\"create\",result=\"succeeded\"} 2.5\n"
        ));
        assert!(text.contains("toygres_controller_health_checks_total{result=\"failed\"} 1\n"));
    }

    #[test]
    fn instance_gauges_are_left_out_when_the_cms_is_down() {
        let x = Exposition::default();
        render(&x, None);
        let text = x.text();
        assert!(text.contains("toygres_controller_up 1\n"));
        assert!(text.contains("toygres_controller_cms_up 0\n"));
        assert!(!text.contains("toygres_controller_instances"));
    }

    /// Every family: the CMS answered, an operation finished, an HA event, health checks.
    fn full_scrape_text() -> String {
        let metrics = crate::metrics::ControllerMetrics::default();
        metrics.record_operation("create", "succeeded", 2500);
        metrics.record_ha_event("failover-started");
        metrics.record_health_check(true);
        let x = Exposition::default();
        render(&x, Some(&[("running", 2)]));
        render_controller(&x, Some(&[("healthy".to_string(), 1)]), &metrics);
        render_ro(&x, &[RoEndpointView::default()]);
        x.text()
    }

    #[test]
    fn ro_backends_are_counted_by_state_and_endpoints_by_where_they_lead() {
        use toygres_common::ro_api::RoBackend;
        let backend = |member: &str, state| RoBackend {
            member: member.into(),
            state,
            lag_bytes: None,
            lag_seconds: None,
        };
        let views = [
            RoEndpointView {
                backends: vec![
                    backend("a-1", RoBackendState::In),
                    backend("a-2", RoBackendState::LagOverBound),
                ],
                ..Default::default()
            },
            RoEndpointView {
                backends: vec![backend("b-1", RoBackendState::BreakerOpen)],
                fallback_to_primary: true,
                ..Default::default()
            },
        ];
        let x = Exposition::default();
        render_ro(&x, &views);
        let text = x.text();
        assert!(text.contains("toygres_controller_ro_backends{state=\"in\"} 1\n"));
        assert!(text.contains("toygres_controller_ro_backends{state=\"lag-over-bound\"} 1\n"));
        assert!(text.contains("toygres_controller_ro_backends{state=\"breaker-open\"} 1\n"));
        assert!(text.contains("toygres_controller_ro_backends{state=\"unhealthy\"} 0\n"));
        assert!(text.contains("toygres_controller_ro_endpoints{leads_to=\"primary\"} 1\n"));
        assert!(text.contains("toygres_controller_ro_endpoints{leads_to=\"standbys\"} 1\n"));
        assert!(text.contains("toygres_controller_ro_endpoints{leads_to=\"nowhere\"} 0\n"));
    }

    #[test]
    fn families_types_help_and_label_sets_stay_as_they_were() {
        let listed = toygres_common::exposition::family_lines(&full_scrape_text());
        let expected: Vec<String> = EXPECTED_FAMILIES.lines().map(str::to_string).collect();
        assert_eq!(listed, expected, "\n{}", listed.join("\n"));
    }

    /// The families of the hand-written exposition this module had before it used the
    /// `prometheus` crate: `name type [label names per series] help`.
    const EXPECTED_FAMILIES: &str = r#"toygres_controller_cms_up gauge {[]} Whether the CMS database answered the last scrape.
toygres_controller_ha_events_total counter {["kind"]} High-availability decisions and alerts since start, by kind (ha-alert: a primary is down and no standby may take over).
toygres_controller_health_checks_total counter {["result"]} Member health probes, by result.
toygres_controller_health_wakeups_total counter {["outcome"]} The health fast path's wake-ups of instance actors, by outcome (sent; withheld: one was queued or a round ran; uncorroborated: a probe timed out while the prober ran late, held for a second pass).
toygres_controller_instances gauge {["state"]} Instances recorded in the CMS, by state.
toygres_controller_instances_health gauge {["health"]} Live instances, by health.
toygres_controller_operation_duration_seconds summary {["kind", "result"]} How long finished operations took.
toygres_controller_operations_total counter {["kind", "result"]} Operations finished since start, by kind and result.
toygres_controller_ro_backends gauge {["state"]} Standbys of the live instances' ro endpoints, by state (in, lag-over-bound, breaker-open, half-open, unhealthy).
toygres_controller_ro_endpoints gauge {["leads_to"]} Live instances' ro endpoints, by where they lead: standbys, primary (no standby qualifies: fallback) or nowhere (refusing).
toygres_controller_up gauge {[]} Whether the controller is running."#;
}
