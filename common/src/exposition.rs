//! `/metrics` of both agents: one scrape's values set into a registry of its own and written in
//! Prometheus's text format by the `prometheus` crate ([`Exposition`]); and [`families`], which
//! reads an exposition back into its families, types, help and label names, so tests can pin
//! what a scrape exposes.

use std::collections::{BTreeMap, BTreeSet};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Summary};
use prometheus::{Counter, CounterVec, Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One scrape's families, in a registry of their own. A family that cannot be added (a
/// programming error: a bad or repeated name) is logged and left out; the scrape goes on.
#[derive(Default)]
pub struct Exposition {
    registry: Registry,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exposition")
    }
}

impl Exposition {
    fn add<C: Collector + Clone + 'static>(&self, made: prometheus::Result<C>) -> Option<C> {
        made.and_then(|c| self.registry.register(Box::new(c.clone())).map(|()| c))
            .map_err(|e| tracing::error!("a metric family was not added: {e}"))
            .ok()
    }

    /// A gauge without labels.
    pub fn gauge(&self, name: &str, help: &str, value: f64) {
        if let Some(g) = self.add(Gauge::new(name, help)) {
            g.set(value);
        }
    }

    /// A counter without labels, at `value`.
    pub fn counter(&self, name: &str, help: &str, value: f64) {
        if let Some(c) = self.add(Counter::new(name, help)) {
            c.inc_by(value.max(0.0));
        }
    }

    /// A gauge family with labels: `set(&[values], value)` per series.
    pub fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> Series<GaugeVec> {
        Series(self.add(GaugeVec::new(Opts::new(name, help), labels)))
    }

    /// A counter family with labels.
    pub fn counters(&self, name: &str, help: &str, labels: &[&str]) -> Series<CounterVec> {
        Series(self.add(CounterVec::new(Opts::new(name, help), labels)))
    }

    /// A summary family without quantiles (only `_sum` and `_count`), one series per
    /// `(label values, count, sum)`.
    pub fn summaries(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: &[(Vec<String>, u64, f64)],
    ) {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let made =
            Desc::new(name.into(), help.into(), labels.clone(), Default::default()).map(|desc| {
                SummaryFamily {
                    desc,
                    labels,
                    series: series.to_vec(),
                }
            });
        self.add(made);
    }

    /// The text exposition.
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encode the metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The series of one labelled family (none when it could not be added).
#[derive(Debug)]
pub struct Series<V>(Option<V>);

impl Series<GaugeVec> {
    pub fn set(&self, labels: &[&str], value: f64) {
        if let Some(v) = &self.0 {
            v.with_label_values(labels).set(value);
        }
    }
}

impl Series<CounterVec> {
    pub fn set(&self, labels: &[&str], value: f64) {
        if let Some(v) = &self.0 {
            v.with_label_values(labels).inc_by(value.max(0.0));
        }
    }
}

/// A summary family of fixed values: the `prometheus` crate has no summary type of its own.
#[derive(Clone)]
struct SummaryFamily {
    desc: Desc,
    labels: Vec<String>,
    series: Vec<(Vec<String>, u64, f64)>,
}

impl Collector for SummaryFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        for (values, count, sum) in &self.series {
            let mut summary = Summary::default();
            summary.set_sample_count(*count);
            summary.set_sample_sum(*sum);
            let mut metric = Metric::default();
            metric.set_label(
                self.labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect(),
            );
            metric.set_summary(summary);
            family.mut_metric().push(metric);
        }
        vec![family]
    }
}

/// A family as an exposition shows it: its type, its help, and the label names of each series.
pub type FamilyShape = (String, String, BTreeSet<Vec<String>>);

/// The families of an exposition that have series, by name (a summary's `_sum` and `_count`
/// series count as its own). For tests that pin what a scrape exposes.
pub fn families(text: &str) -> BTreeMap<String, FamilyShape> {
    let mut kinds = BTreeMap::new();
    let mut helps = BTreeMap::new();
    let mut series: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                kinds.insert(name.to_string(), kind.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                helps.insert(name.to_string(), help.to_string());
            }
        } else if let Some(name_end) = line.find(['{', ' ']) {
            let labels = match line[name_end..].strip_prefix('{') {
                Some(rest) => rest[..rest.rfind('}').unwrap_or(rest.len())]
                    .split("\",")
                    .filter_map(|pair| pair.split('=').next())
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => Vec::new(),
            };
            let mut name = &line[..name_end];
            for suffix in ["_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if kinds.get(base).is_some_and(|k| k == "summary") {
                        name = base;
                    }
                }
            }
            series.entry(name.to_string()).or_default().insert(labels);
        }
    }
    series
        .into_iter()
        .map(|(name, labels)| {
            let kind = kinds.get(&name).cloned().unwrap_or_default();
            let help = helps.get(&name).cloned().unwrap_or_default();
            (name, (kind, help, labels))
        })
        .collect()
}

/// [`families`] as lines `name type [label names per series] help`, sorted by name.
pub fn family_lines(text: &str) -> Vec<String> {
    families(text)
        .into_iter()
        .map(|(name, (kind, help, labels))| format!("{name} {kind} {labels:?} {help}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_read_back_with_their_labels_and_escaping_kept() {
        let x = Exposition::default();
        x.gauge("up", "Whether it is up.", 1.0);
        x.gauges("m", "h", &["a"]).set(&["x\"y\\z"], 1.0);
        x.counters("c_total", "Counted.", &["kind", "result"])
            .set(&["create", "ok"], 2.0);
        x.summaries(
            "d_seconds",
            "Durations.",
            &["kind"],
            &[(vec!["create".into()], 2, 2.5)],
        );
        let text = x.text();
        assert!(text.contains("m{a=\"x\\\"y\\\\z\"} 1\n"), "{text}");
        assert!(
            text.contains("d_seconds_sum{kind=\"create\"} 2.5\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_count{kind=\"create\"} 2\n"),
            "{text}"
        );
        assert_eq!(
            family_lines(&text),
            vec![
                "c_total counter {[\"kind\", \"result\"]} Counted.",
                "d_seconds summary {[\"kind\"]} Durations.",
                "m gauge {[\"a\"]} h",
                "up gauge {[]} Whether it is up.",
            ]
        );
    }
}
