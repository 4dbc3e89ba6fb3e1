//! `GET /metrics`: the controller's metrics in the Prometheus text format.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiState;

pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let counts = match state.cms.count_instances_by_state().await {
        Ok(counts) => Some(counts),
        Err(e) => {
            tracing::warn!("metrics: {e}");
            None
        }
    };
    let health = state.cms.count_instances_by_health().await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = render(counts.as_deref());
            render_controller(&mut text, health.as_deref(), &state.metrics);
            text
        },
    )
}

/// The gauges of instance health and the counters of operations and health checks.
fn render_controller(
    out: &mut String,
    health: Option<&[(String, i64)]>,
    metrics: &crate::metrics::ControllerMetrics,
) {
    if let Some(health) = health {
        let _ = writeln!(
            out,
            "# HELP toygres_controller_instances_health Live instances, by health.\n\
             # TYPE toygres_controller_instances_health gauge"
        );
        for (health, count) in health {
            let _ = writeln!(
                out,
                "toygres_controller_instances_health{{health=\"{health}\"}} {count}"
            );
        }
    }
    let operations = metrics.operations();
    let _ = writeln!(
        out,
        "# HELP toygres_controller_operations_total Operations finished since start, by kind and result.\n\
         # TYPE toygres_controller_operations_total counter"
    );
    for (kind, result, count, _) in &operations {
        let _ = writeln!(
            out,
            "toygres_controller_operations_total{{kind=\"{kind}\",result=\"{result}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP toygres_controller_operation_duration_seconds How long finished operations took.\n\
         # TYPE toygres_controller_operation_duration_seconds summary"
    );
    for (kind, result, count, seconds) in &operations {
        let labels = format!("kind=\"{kind}\",result=\"{result}\"");
        let _ = writeln!(
            out,
            "toygres_controller_operation_duration_seconds_sum{{{labels}}} {seconds}\n\
             toygres_controller_operation_duration_seconds_count{{{labels}}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP toygres_controller_ha_events_total High-availability decisions and alerts since start, by kind (ha-alert: a primary is down and no standby may take over).\n\
         # TYPE toygres_controller_ha_events_total counter"
    );
    for (kind, count) in metrics.ha_events() {
        let _ = writeln!(
            out,
            "toygres_controller_ha_events_total{{kind=\"{kind}\"}} {count}"
        );
    }
    let (ok, failed) = metrics.health_checks();
    let _ = writeln!(
        out,
        "# HELP toygres_controller_health_checks_total Member health probes, by result.\n\
         # TYPE toygres_controller_health_checks_total counter\n\
         toygres_controller_health_checks_total{{result=\"ok\"}} {ok}\n\
         toygres_controller_health_checks_total{{result=\"failed\"}} {failed}"
    );
}

/// The metrics text; `instance_counts` is `None` when the CMS could not be read.
fn render(instance_counts: Option<&[(&str, i64)]>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP toygres_controller_up Whether the controller is running.\n\
         # TYPE toygres_controller_up gauge\n\
         toygres_controller_up 1"
    );
    let _ = writeln!(
        out,
        "# HELP toygres_controller_cms_up Whether the CMS database answered the last scrape.\n\
         # TYPE toygres_controller_cms_up gauge\n\
         toygres_controller_cms_up {}",
        u8::from(instance_counts.is_some())
    );
    if let Some(counts) = instance_counts {
        let _ = writeln!(
            out,
            "# HELP toygres_controller_instances Instances recorded in the CMS, by state.\n\
             # TYPE toygres_controller_instances gauge"
        );
        for (state, count) in counts {
            let _ = writeln!(
                out,
                "toygres_controller_instances{{state=\"{state}\"}} {count}"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_gauges_carry_help_type_and_one_line_per_state() {
        let text = render(Some(&[("creating", 0), ("running", 2)]));
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
        let mut text = String::new();
        render_controller(&mut text, Some(&[("healthy".to_string(), 1)]), &metrics);
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
        let text = render(None);
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
        let mut text = render(Some(&[("running", 2)]));
        render_controller(&mut text, Some(&[("healthy".to_string(), 1)]), &metrics);
        text
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
toygres_controller_instances gauge {["state"]} Instances recorded in the CMS, by state.
toygres_controller_instances_health gauge {["health"]} Live instances, by health.
toygres_controller_operation_duration_seconds summary {["kind", "result"]} How long finished operations took.
toygres_controller_operations_total counter {["kind", "result"]} Operations finished since start, by kind and result.
toygres_controller_up gauge {[]} Whether the controller is running."#;
}
