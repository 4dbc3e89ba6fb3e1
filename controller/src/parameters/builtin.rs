//! The catalog of a fresh PostgreSQL 15 (its `pg_settings`, read once from a real server and
//! kept in `pg15_settings.json`), for checking parameters before any member exists: a create
//! request's parameters are refused with a 400 before anything is recorded, by the same
//! allow-list and value checks the sidecar applies to a running instance.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use toygres_common::controller_api::InstanceSize;
use toygres_common::parameters_api::{
    check_request, refusal, CatalogEntry, ParameterCatalog, ParameterCategory, ParameterProblem,
};

use super::profiles::{self, Profile};

/// The Postgres major version the catalog describes (the one Toygres runs).
pub const POSTGRES_VERSION: &str = "15";

/// One `pg_settings` row as `pg15_settings.json` keeps it.
#[derive(Deserialize)]
struct Row {
    name: String,
    context: String,
    vartype: String,
    unit: Option<String>,
    min: Option<String>,
    max: Option<String>,
    enum_values: Vec<String>,
    default: Option<String>,
    description: String,
}

/// The catalog, with each setting's current value its default.
pub fn catalog() -> &'static ParameterCatalog {
    static CATALOG: OnceLock<ParameterCatalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let rows: Vec<Row> =
            serde_json::from_str(include_str!("pg15_settings.json")).unwrap_or_default();
        let parameters = rows
            .into_iter()
            .map(|r| {
                let refused = refusal(&r.name, false, &r.context);
                let category = match refused {
                    Some(ref why) if why.code != "not_modifiable" => ParameterCategory::Immutable,
                    _ => ParameterCategory::from_context(&r.context),
                };
                CatalogEntry {
                    category,
                    current: r.default.clone().unwrap_or_default(),
                    pending_restart: false,
                    modifiable: refused.is_none(),
                    reason: refused.map(|why| why.reason),
                    name: r.name,
                    context: r.context,
                    vartype: r.vartype,
                    unit: r.unit,
                    min: r.min,
                    max: r.max,
                    enum_values: r.enum_values,
                    default: r.default,
                    description: r.description,
                }
            })
            .collect();
        ParameterCatalog {
            postgres_version: POSTGRES_VERSION.to_string(),
            parameters,
        }
    })
}

/// Checks a new instance's parameters; every problem, so one answer names each bad setting.
pub fn check(parameters: &BTreeMap<String, String>) -> Vec<ParameterProblem> {
    let request: BTreeMap<String, Option<String>> = parameters
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    check_request(catalog(), &request)
}

/// The parameters a new instance starts with: `profile`'s values for `size` (when given), with
/// `explicit` over them, all checked; an error names each bad setting.
pub fn for_new_instance(
    profile: Option<&str>,
    size: Option<&InstanceSize>,
    explicit: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut parameters = BTreeMap::new();
    if let Some(profile) = profile {
        let profile: Profile = profile.parse()?;
        let size = size.ok_or("a profile is computed from the instance's size: give size too")?;
        parameters.extend(
            profiles::settings(profile, size.into())
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
    }
    parameters.extend(explicit.iter().map(|(k, v)| (k.clone(), v.clone())));
    let problems = check(&parameters);
    if problems.is_empty() {
        Ok(parameters)
    } else {
        Err(problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_checks_like_a_running_server() {
        let catalog = catalog();
        assert!(
            catalog.parameters.len() > 300,
            "{}",
            catalog.parameters.len()
        );
        let shared_buffers = catalog.get("shared_buffers").unwrap();
        assert_eq!(shared_buffers.category, ParameterCategory::Restart);
        assert_eq!(shared_buffers.unit.as_deref(), Some("8kB"));
        assert!(catalog.get("port").is_some_and(|p| !p.modifiable));

        let good: BTreeMap<String, String> = [
            ("work_mem", "64MB"),
            ("shared_buffers", "256MB"),
            ("max_connections", "200"),
            ("jit", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(check(&good).is_empty(), "{:?}", check(&good));

        let bad: BTreeMap<String, String> = [
            ("work_mem", "lots"),
            ("shared_preload_libraries", "evil"),
            ("port", "6000"),
            ("no_such_setting", "1"),
            ("max_wal_senders", "0"),
            ("wal_level", "minimal"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let problems = check(&bad);
        let named: Vec<&str> = problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            named,
            bad.keys().map(String::as_str).collect::<Vec<_>>(),
            "{problems:?}"
        );
    }

    #[test]
    fn every_profile_passes_the_checks_and_explicit_values_win() {
        let sizes = [
            (512, 1, None),
            (8192, 4, Some("hdd")),
            (65536, 32, Some("san")),
        ];
        for (memory_mb, cpus, storage) in sizes {
            let size = InstanceSize {
                memory_mb,
                cpus,
                storage: storage.map(String::from),
            };
            for profile in Profile::ALL {
                let got = for_new_instance(Some(profile.as_str()), Some(&size), &BTreeMap::new())
                    .unwrap_or_else(|e| panic!("{profile} {size:?}: {e}"));
                assert!(got.contains_key("shared_buffers"), "{got:?}");
            }
        }
        let size = InstanceSize {
            memory_mb: 4096,
            cpus: 2,
            storage: None,
        };
        let explicit = BTreeMap::from([("work_mem".to_string(), "8MB".to_string())]);
        let got = for_new_instance(Some("oltp"), Some(&size), &explicit).unwrap();
        assert_eq!(got["work_mem"], "8MB");
        assert_eq!(got["shared_buffers"], "1048576kB");
        assert!(for_new_instance(Some("fast"), Some(&size), &explicit)
            .unwrap_err()
            .contains("unknown profile"));
        assert!(for_new_instance(Some("oltp"), None, &explicit).is_err());
        assert_eq!(for_new_instance(None, None, &explicit).unwrap(), explicit);
    }
}
