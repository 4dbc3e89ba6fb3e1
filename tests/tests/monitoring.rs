//! The alert rules and dashboards that ship: the chart's copy of the rules is the plain rules
//! file; every metric a rule or a dashboard query names is one the sidecar or the controller
//! exposes; the dashboards are valid Grafana JSON; and the rules pass `promtool check rules`
//! and their unit tests (`monitoring/alerts_test.yaml`: each alert firing and not firing).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The labels the chart's PodMonitor gives sidecar series: `toygres_` words that are no metric.
const LABELS: [&str; 2] = ["toygres_instance", "toygres_member"];

/// Every `toygres_…` word in `text` but the label names.
fn metric_words(text: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("toygres_") {
        let start = i + found;
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let word = &text[start..end];
        if !preceded_by_word && !LABELS.contains(&word) {
            words.insert(word.to_string());
        }
        i = end;
    }
    words
}

/// The metric names the two programs expose: the quoted names in their metrics modules.
fn exposed() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for source in [
        "sidecar/src/api/metrics.rs",
        "sidecar/src/api/server.rs",
        "controller/src/api/metrics.rs",
    ] {
        let text = read(source);
        for part in text.split('"').skip(1).step_by(2) {
            if part.starts_with("toygres_")
                && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                names.insert(part.to_string());
            }
        }
    }
    names
}

/// A queried series name is exposed as it is, or is a summary's `_sum`/`_count`.
fn is_exposed(name: &str, exposed: &BTreeSet<String>) -> bool {
    exposed.contains(name)
        || ["_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(*suffix)
                .is_some_and(|base| exposed.contains(base))
        })
}

#[test]
fn the_chart_ships_the_same_alert_rules_as_the_plain_file() {
    assert_eq!(
        read("monitoring/alerts.yaml"),
        read("charts/toygres/files/alerts.yaml"),
        "copy monitoring/alerts.yaml to charts/toygres/files/alerts.yaml"
    );
}

#[test]
fn every_metric_an_alert_or_a_dashboard_queries_is_exposed() {
    let exposed = exposed();
    assert!(exposed.contains("toygres_pg_up") && exposed.contains("toygres_controller_up"));
    let mut queried = BTreeSet::new();
    // Alert names (Toygres…) are not metrics; their expressions are.
    for line in read("monitoring/alerts.yaml").lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            queried.extend(metric_words(expr));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for dashboard in ["toygres-instance.json", "toygres-fleet.json"] {
        let text = read(&format!("monitoring/dashboards/{dashboard}"));
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{dashboard}: {e}"));
        assert!(
            json["uid"].is_string() && json["title"].is_string(),
            "{dashboard}"
        );
        let panels = json["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{dashboard}");
        let mut ids = BTreeSet::new();
        for panel in panels {
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{dashboard}: duplicate id"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "{dashboard}: {} has no query",
                panel["title"]
            );
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                let words = metric_words(expr);
                assert!(
                    !words.is_empty(),
                    "{dashboard}: {expr} queries no toygres metric"
                );
                queried.extend(words);
            }
        }
        for variable in json["templating"]["list"].as_array().unwrap() {
            if let Some(query) = variable["definition"].as_str() {
                queried.extend(metric_words(query));
            }
        }
    }
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !is_exposed(name, &exposed))
        .collect();
    assert!(missing.is_empty(), "queried but not exposed: {missing:?}");
}

/// The promtool to run: the v3 one `scripts/build-promtool.sh` builds when it is there, else
/// the one `scripts/install-test-deps.sh` installs (Debian's, `/usr/bin/promtool`), else one on
/// the `PATH`. Panics when there is none: the rules' tests must run.
fn promtool() -> PathBuf {
    let built = Command::new("bash")
        .arg(repo().join("scripts/build-promtool.sh"))
        .arg("--print-path")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|candidate| candidate.is_file())
    });
    built
        .into_iter()
        .chain([PathBuf::from("/usr/bin/promtool")])
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .expect("no promtool: run scripts/install-test-deps.sh (or scripts/build-promtool.sh)")
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = promtool();
    let monitoring = repo().join("monitoring");
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts_test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&monitoring)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
