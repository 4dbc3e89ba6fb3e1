//! What a set of proposed settings would change on an instance (`params profile … --dry-run`):
//! each setting whose proposed value differs from what the instance runs, compared in the
//! setting's base unit so `4GB` and `524288` (8kB pages) count as the same.

use std::collections::BTreeMap;

use toygres_common::parameters_api::{display_value, same_value, ParameterCatalog};

/// One setting that would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub name: String,
    /// What the instance runs, with its unit.
    pub current: String,
    pub proposed: String,
}

/// The settings of `proposed` whose value differs from the catalog's current one (settings
/// the catalog does not know are listed with an empty current value).
pub fn diff<K: AsRef<str>>(
    catalog: &ParameterCatalog,
    proposed: &BTreeMap<K, String>,
) -> Vec<SettingChange> {
    proposed
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_ref();
            let Some(entry) = catalog.get(name) else {
                return Some(SettingChange {
                    name: name.to_string(),
                    current: String::new(),
                    proposed: value.clone(),
                });
            };
            let unit = entry.unit.as_deref();
            let same = same_value(&entry.vartype, unit, &entry.current, value);
            (!same).then(|| SettingChange {
                name: name.to_string(),
                current: display_value(&entry.current, unit),
                proposed: value.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use toygres_common::parameters_api::{CatalogEntry, ParameterCategory};

    fn entry(name: &str, vartype: &str, unit: Option<&str>, current: &str) -> CatalogEntry {
        CatalogEntry {
            name: name.into(),
            category: ParameterCategory::Restart,
            context: "postmaster".into(),
            vartype: vartype.into(),
            unit: unit.map(str::to_string),
            min: None,
            max: None,
            enum_values: vec![],
            default: None,
            current: current.into(),
            pending_restart: false,
            description: String::new(),
            modifiable: true,
            reason: None,
        }
    }

    #[test]
    fn only_settings_that_differ_in_their_base_unit_are_listed() {
        let catalog = ParameterCatalog {
            postgres_version: "15".into(),
            parameters: vec![
                entry("shared_buffers", "integer", Some("8kB"), "16384"),
                entry("work_mem", "integer", Some("kB"), "4096"),
                entry("jit", "bool", None, "on"),
                entry("random_page_cost", "real", None, "4"),
            ],
        };
        let proposed: BTreeMap<&str, String> = [
            ("shared_buffers", "131072kB"),
            ("work_mem", "8MB"),
            ("jit", "off"),
            ("random_page_cost", "4"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        let changes = diff(&catalog, &proposed);
        let names: Vec<_> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["jit", "work_mem"]);
        assert_eq!(changes[1].current, "4096kB");
        assert_eq!(changes[1].proposed, "8MB");
    }
}
