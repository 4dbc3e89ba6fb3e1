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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(counts.as_deref()),
    )
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
    fn instance_gauges_are_left_out_when_the_cms_is_down() {
        let text = render(None);
        assert!(text.contains("toygres_controller_up 1\n"));
        assert!(text.contains("toygres_controller_cms_up 0\n"));
        assert!(!text.contains("toygres_controller_instances"));
    }
}
